"""The models: students (cheap, online, River) and teachers (Hugging Face transformers).

Students follow one protocol (:class:`~streamer.models.student.Student`); the task that
uses a student kind registers it (:mod:`streamer.tasks`).
"""

from streamer.models.student import BaseStudent, Student

__all__ = ["BaseStudent", "Student"]
