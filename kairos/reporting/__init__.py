"""What happened: the lifecycle report over the customer store, its charts, holdout
statistics, and what a workflow costs on Temporal Cloud."""
