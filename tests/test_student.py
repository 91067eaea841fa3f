from streamer.datasets import load_examples
from streamer.student import Student


def test_untrained_student_has_no_answer():
    assert Student().predict("anything") == (None, 0.0)


def test_student_learns_online_and_gets_confident():
    examples = load_examples("rotten_tomatoes", split="stream", limit=2000)
    student = Student()
    correct = 0
    for i, ex in enumerate(examples):
        label, confidence = student.predict(ex.text)
        assert 0.0 <= confidence <= 1.0
        if i >= 1000:
            correct += label == ex.label
        student.learn(ex.text, ex.label)
    assert student.version == 2000
    assert correct / 1000 > 0.65  # prequential accuracy on gold, second half


def test_checkpoint_round_trip():
    student = Student()
    for text, label in [("good fun", "pos"), ("bad dull", "neg")] * 10:
        student.learn(text, label)
    restored = Student.from_bytes(student.to_bytes())
    assert restored.version == student.version
    assert restored.predict("good fun") == student.predict("good fun")
