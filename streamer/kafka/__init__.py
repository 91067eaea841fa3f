"""Kafka plumbing: the client factory, the embedded broker, and records in and out of topics."""

from streamer.kafka.clients import KafkaClients
from streamer.kafka.embedded_broker import BrokerError, EmbeddedBroker, free_port, wait_for_broker

__all__ = ["BrokerError", "EmbeddedBroker", "KafkaClients", "free_port", "wait_for_broker"]
