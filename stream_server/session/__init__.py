"""The streaming side: VAD segmentation, the per-session state machine and its small policies."""
