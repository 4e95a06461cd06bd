"""The capacity model of one decoder process (issue 14 item 7): measured service times, a workload model and a
discrete-event simulation of the scheduler's policy. ``python -m benchmarks.capacity_model`` runs it."""
