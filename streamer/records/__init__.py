"""Records: the topic catalogue, decoding/encoding with dead letters, and the records workers publish."""

from streamer.records.builders import (PREDICTION_FIELDS, escalation, label_record, passthrough, student_prediction,
                                       teacher_prediction)
from streamer.records.catalogue import (DEAD_LETTER, ESCALATIONS, EVENTS, LABELS, PREDICTIONS, REQUIRED_TOPICS,
                                        SNAPSHOTS,
                                        Catalogue, CatalogueError, TopicSpec, create_topics,
                                        ensure_topics)
from streamer.records.codec import REJECTION_REASONS, Rejection, dead_letter, dead_letter_key, decode, encode, now_ms

__all__ = ["DEAD_LETTER", "ESCALATIONS", "EVENTS", "LABELS", "PREDICTIONS", "PREDICTION_FIELDS", "REJECTION_REASONS",
           "REQUIRED_TOPICS", "SNAPSHOTS", "Catalogue", "CatalogueError", "Rejection", "TopicSpec", "create_topics", "dead_letter",
           "ensure_topics",
           "dead_letter_key", "decode", "encode", "escalation", "label_record", "now_ms", "passthrough",
           "student_prediction", "teacher_prediction"]
