"""Dry runs of journeys on a private, time-skipping Temporal: weeks in seconds.

The customer file (:mod:`.customers`), the senders that keep messages instead of delivering
them (:mod:`.capture`), the timeline a run leaves (:mod:`.timeline`) and the engine that runs
the real worker against them (:mod:`.engine`).
"""
