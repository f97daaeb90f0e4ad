"""Multi-step jobs: a workflow is a parent job whose steps fan out as child jobs on the same queue."""
