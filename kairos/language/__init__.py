"""The journey language: what a journey, segment or customer.yaml file means. Read from
YAML with positions, checked with problems at file:line, compiled to the frozen plan
the journey workflow interprets. No I/O beyond reading the project."""
