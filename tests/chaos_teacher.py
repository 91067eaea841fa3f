"""A teacher for the chaos test: the real briefly trained model, failing on purpose on some texts.

Loaded by real worker processes through ``STREAMER_TEACHER_CLASS=chaos_teacher:FailingTeacher`` (with this
folder on ``PYTHONPATH``), the way a user plugs in a teacher of their own.
"""

from __future__ import annotations

from streamer.models.teacher import Teacher

#: A text holding this fails the whole batch it is in.
POISON = "POISON-PILL"


class FailingTeacher(Teacher):
    def predict_batch(self, texts: list[str]) -> list[tuple[str, float]]:
        if any(POISON in text for text in texts):
            raise ValueError(f"the model cannot take a text with {POISON}")
        return super().predict_batch(texts)
