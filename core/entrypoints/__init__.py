"""Entry points: the HTTP API (`http`), the queue consumer (`consumer`), the local runtime (`local`)
and the `alto` CLI (`cli`). Each translates its input into a service call; none holds job logic."""
