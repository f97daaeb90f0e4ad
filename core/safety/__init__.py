"""The safety layer: per-tenant policies of checks on a job's input, retrieved context, stream and output."""
