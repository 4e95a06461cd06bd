"""Scale-out on Ray Serve: the same app in two tiers.

Ingress replicas run ``create_app`` (every route and dialect, sessions, VAD, resampling; CPU only) with a
``RemoteDecoder`` as their ``Decoder``; decoder replicas (``DecoderReplica``) each hold one model, its scheduler
and engine, so jobs from every ingress replica meet in one batch. ``SessionAffinityRouter`` sends every job of a
session (or an upload) to the decoder replica chosen for it when it started, by least load. Ray is an optional
extra (``pip install -e '.[cluster]'``); nothing outside this package imports it.
"""
