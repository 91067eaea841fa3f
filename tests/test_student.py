"""How well the default classification student learns (its contract is in test_student_contract.py)."""

from streamer.datasets import load_examples
from streamer.models.naive_bayes import NaiveBayesStudent


def test_student_learns_online_and_gets_confident():
    examples = load_examples("rotten_tomatoes", split="stream", limit=2000)
    student = NaiveBayesStudent()
    correct = 0
    for i, ex in enumerate(examples):
        label, confidence = student.predict(ex.text)
        if i >= 1000:
            correct += label == ex.label
        student.learn(ex.text, ex.label)
    assert student.version == 2000
    assert correct / 1000 > 0.65  # prequential accuracy on gold, second half
