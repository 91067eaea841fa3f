"""A teacher for the chaos test: the real briefly trained model, failing on purpose on some texts, and on every
text while an outage file exists.

Loaded by real worker processes through ``STREAMER_TEACHER_CLASS=chaos_teacher:FailingTeacher`` (with this
folder on ``PYTHONPATH``), the way a user plugs in a teacher of their own. ``CHAOS_TEACHER_OUTAGE_FILE`` names
the file whose presence stands for the model being unreachable (a remote model server down, a lost device).
"""

from __future__ import annotations

import os
from pathlib import Path

from streamer.models.teacher import Teacher

#: A text holding this fails the whole batch it is in.
POISON = "POISON-PILL"
OUTAGE_FILE_VARIABLE = "CHAOS_TEACHER_OUTAGE_FILE"


class FailingTeacher(Teacher):
    def predict_batch(self, texts: list[str]) -> list[tuple[str, float]]:
        outage = os.environ.get(OUTAGE_FILE_VARIABLE)
        if outage and Path(outage).exists():
            raise ConnectionError("the model server is unreachable")
        if any(POISON in text for text in texts):
            raise ValueError(f"the model cannot take a text with {POISON}")
        return super().predict_batch(texts)
