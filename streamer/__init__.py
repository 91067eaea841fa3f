"""babybear-streamer: cheap inference triage on a Kafka stream.

A River student answers the events it is confident about; the rest are escalated
to a transformer teacher whose labels feed back so the student keeps learning.
"""

__version__ = "0.1.0"
