# Container workers on the same topic: a pull subscription of their own, with the push subscription's retry and
# dead-letter policies, read by the worker function's service account through GKE Workload Identity, so that the
# grants tests/test_gcp_deploy.py proves for the function are the ones the containers run with, plus the
# subscriber role the pull needs. Pub/Sub delivers every message to both subscriptions: during a move, point the
# push subscription elsewhere (docs/clouds/containers.md), or each job is delivered twice (and still paid once).
locals {
  # each lease extension the client library asks for: a message held by a worker that died comes back within
  # it (the overlay's ALTO_QUEUE__VISIBILITY_TIMEOUT_S); the library keeps extending up to pull.job_deadline_s
  pull_ack_deadline_s = 60
  gke_member          = "serviceAccount:${var.project}.svc.id.goog[${var.gke_worker_service_account}]"
}

resource "google_pubsub_subscription" "pull" {
  count                      = var.pull_workers ? 1 : 0
  name                       = "${var.name}-jobs-pull"
  topic                      = google_pubsub_topic.jobs.id
  ack_deadline_seconds       = local.pull_ack_deadline_s
  message_retention_duration = "345600s"
  expiration_policy {
    ttl = ""
  }
  retry_policy {
    minimum_backoff = "${local.retry_min_backoff_s}s"
    maximum_backoff = "${local.retry_max_backoff_s}s"
  }
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead.id
    max_delivery_attempts = var.max_delivery_attempts
  }
}

resource "google_pubsub_subscription_iam_member" "pull_worker" {
  count        = var.pull_workers ? 1 : 0
  subscription = google_pubsub_subscription.pull[0].name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.fn["worker"].email}"
}

# as on the push subscription: Pub/Sub acknowledges what it forwards to the dead-letter topic
resource "google_pubsub_subscription_iam_member" "pull_dead_forwarder" {
  count        = var.pull_workers ? 1 : 0
  subscription = google_pubsub_subscription.pull[0].name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${local.pubsub_sa}"
}

# Workload Identity: the pods' Kubernetes service account acts as the worker's Google service account
resource "google_service_account_iam_member" "gke_worker" {
  count              = var.pull_workers ? 1 : 0
  service_account_id = google_service_account.fn["worker"].name
  role               = "roles/iam.workloadIdentityUser"
  member             = local.gke_member
}

output "pull_subscription" {
  value = var.pull_workers ? google_pubsub_subscription.pull[0].name : null
}
