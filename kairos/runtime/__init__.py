"""The runtime contract: what workflows, activities, the worker and the front doors agree
on. Workflow ids, signals and payloads, the one Settings, the client, connecting to
Temporal, payload encryption, the send protocol's rules and the send policy."""
