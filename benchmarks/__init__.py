"""Benchmarks: Kairos against a hand-written Temporal baseline (``python -m benchmarks``).

``journeys/`` mirrors of the five journeys with waits of seconds; ``baseline`` the same journeys
written by hand; ``worker`` a worker process of either side; ``workload`` the customers and
their events; ``engine`` one measurement on a fresh dev server; ``infra`` the processes it
starts and watches; ``micro`` rendering and compiling alone; ``profiles`` py-spy summaries;
``report`` the machine, the ratios and the table. docs/performance.md explains the figures.
"""
