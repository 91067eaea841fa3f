"""Triage: the router (student + threshold policy + warm-up + audit), the policies and checkpoints."""

from streamer.triage.policies import POLICIES, FixedPolicy, OnlinePolicy, PaperPolicy, ThresholdPolicy, build_policy
from streamer.triage.router import Route, Triage, build_triage, triage_config

__all__ = ["POLICIES", "FixedPolicy", "OnlinePolicy", "PaperPolicy", "Route", "ThresholdPolicy", "Triage",
           "build_policy", "build_triage", "triage_config"]
