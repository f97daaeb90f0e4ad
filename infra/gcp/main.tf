# Altostratus on Google Cloud: Cloud Functions gen2 + Pub/Sub + Firestore + Cloud Storage + Secret Manager.
# The one deploy path: ./deploy.sh builds the source and runs `terraform apply` on these files.
terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0"
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}

data "google_project" "this" {}

locals {
  topic      = "${var.name}-jobs"
  dead_topic = "${var.name}-jobs-dead"
  pubsub_sa  = "service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  # Timing, derived from variables.tf's limits (tests/test_deploy_limits.py checks the relations):
  # a push waits for the worker's whole invocation before it counts as failed and is redelivered
  ack_deadline_s = var.worker_timeout_s + 10
  # a running job's lease, renewed by its heartbeat up to the invocation's deadline (adapters/gcp/main.py
  # DEADLINE_MARGIN_S before the timeout)
  lease_s = var.worker_timeout_s - 20
  # a queued job is lost only once no delivery can still be in flight or backing off, plus one schedule
  retry_min_backoff_s = 10
  retry_max_backoff_s = 600
  reconcile_after_s   = local.ack_deadline_s + local.retry_max_backoff_s + 300
  stream_wait_s       = min(25, var.api_timeout_s - 5)

  env = {
    ALTO_GCP_PROJECT                   = var.project
    ALTO_TOPIC                         = local.topic
    ALTO_BUCKET                        = google_storage_bucket.data.name
    ALTO_CONFIG                        = "altostratus.yaml"
    ALTO_FIRESTORE_DATABASE            = google_firestore_database.this.name
    ALTO_API_KEY_HASHES                = var.api_key_hashes
    ALTO_FUNCTION_TIMEOUT_S            = tostring(var.worker_timeout_s)
    ALTO_QUEUE__MAX_RECEIVES           = tostring(var.max_delivery_attempts)
    ALTO_QUEUE__VISIBILITY_TIMEOUT_S   = tostring(local.ack_deadline_s)
    ALTO_GOVERNANCE__LEASE_S           = tostring(local.lease_s)
    ALTO_GOVERNANCE__RECONCILE_AFTER_S = tostring(local.reconcile_after_s)
    ALTO_STREAM__MAX_WAIT_S            = tostring(local.stream_wait_s)
  }
}

# ---- APIs: a fresh project has none of these on
resource "google_project_service" "api" {
  for_each = toset([
    "artifactregistry.googleapis.com", "cloudbuild.googleapis.com", "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com", "firestore.googleapis.com", "iam.googleapis.com", "logging.googleapis.com",
    "monitoring.googleapis.com", "pubsub.googleapis.com", "run.googleapis.com", "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])
  service            = each.value
  disable_on_destroy = false
}

# ---- messaging: push subscriptions this file owns (the dead-letter policy, ack deadline and retry
# policy are set here, not on an Eventarc-made subscription no provider can configure)
resource "google_pubsub_topic" "jobs" {
  #checkov:skip=CKV_GCP_83:encrypted at rest with Google-managed keys; a customer-managed key is the project's choice
  name       = local.topic
  depends_on = [google_project_service.api]
}

resource "google_pubsub_topic" "dead" {
  #checkov:skip=CKV_GCP_83:encrypted at rest with Google-managed keys; a customer-managed key is the project's choice
  name       = local.dead_topic
  depends_on = [google_project_service.api]
}

resource "google_pubsub_subscription" "jobs" {
  name                       = "${var.name}-jobs-worker"
  topic                      = google_pubsub_topic.jobs.id
  ack_deadline_seconds       = local.ack_deadline_s
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
  push_config {
    push_endpoint = google_cloudfunctions2_function.fn["worker"].service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.push.email
    }
  }
}

resource "google_pubsub_subscription" "dead" {
  name                       = "${var.name}-jobs-dead-letter"
  topic                      = google_pubsub_topic.dead.id
  ack_deadline_seconds       = 70
  message_retention_duration = "1209600s"
  expiration_policy {
    ttl = ""
  }
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }
  push_config {
    push_endpoint = google_cloudfunctions2_function.fn["dead-letter"].service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.push.email
    }
  }
}

# Pub/Sub itself forwards undeliverable messages: it publishes to the dead-letter topic and acknowledges on
# the worker's subscription, and it mints the push identity's OIDC tokens
resource "google_pubsub_topic_iam_member" "dead_forwarder" {
  topic  = google_pubsub_topic.dead.name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${local.pubsub_sa}"
}

resource "google_pubsub_subscription_iam_member" "dead_forwarder" {
  subscription = google_pubsub_subscription.jobs.name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${local.pubsub_sa}"
}

resource "google_service_account_iam_member" "push_tokens" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${local.pubsub_sa}"
}

# ---- storage
resource "google_firestore_database" "this" {
  name        = "${var.name}-db"
  location_id = var.region
  type        = "FIRESTORE_NATIVE"
  depends_on  = [google_project_service.api]
}

resource "google_firestore_field" "jobs_ttl" {
  database   = google_firestore_database.this.name
  collection = "jobs"
  field      = "expires_at"
  ttl_config {}
}

resource "google_firestore_field" "state_ttl" {
  database   = google_firestore_database.this.name
  collection = "state"
  field      = "ttl"
  ttl_config {}
}

# Composite indexes for every query adapters/gcp/firestore.py makes (tests/test_gcp_deploy.py records each
# query shape the functions ran and checks it against these)
locals {
  job_indexes = {
    by_status        = [["status", "ASCENDING"], ["updated_at", "ASCENDING"]]                           # the reconciler's sweep
    by_tenant        = [["tenant", "ASCENDING"], ["created_at", "DESCENDING"]]                          # a tenant's listing
    by_tenant_status = [["tenant", "ASCENDING"], ["status", "ASCENDING"], ["created_at", "DESCENDING"]] # ?status=
  }
}

resource "google_firestore_index" "jobs" {
  for_each   = local.job_indexes
  database   = google_firestore_database.this.name
  collection = "jobs"
  dynamic "fields" {
    for_each = each.value
    content {
      field_path = fields.value[0]
      order      = fields.value[1]
    }
  }
}

resource "google_storage_bucket" "data" {
  #checkov:skip=CKV_GCP_62:usage logs need a second bucket; Cloud Audit Logs data access logs are the trail where a project wants one
  name                        = "${var.project}-${var.name}-data"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  versioning {
    enabled = true
  }
  dynamic "lifecycle_rule" {
    for_each = {
      "claim-check/"         = 15 # outlive the queue's retention
      "workflow-inputs/"     = 31 # a document outlives the job that reads it (30 days)
      "streams/"             = 31 # replayable as long as the job record lives
      "audit/retention=90d/" = 90
    }
    content {
      condition {
        age            = lifecycle_rule.value
        matches_prefix = [lifecycle_rule.key]
      }
      action {
        type = "Delete"
      }
    }
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [google_project_service.api]
}

resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:holds the function source archive only; usage logs need a second bucket
  name                        = "${var.project}-${var.name}-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  versioning {
    enabled = true
  }
  depends_on = [google_project_service.api]
}

resource "google_storage_bucket_object" "source" {
  name   = "function-source-${filemd5(var.source_archive)}.zip"
  bucket = google_storage_bucket.source.name
  source = var.source_archive
}

# The model's API key: deploy.sh adds its first version from ANTHROPIC_API_KEY (the value never enters the
# Terraform state); the worker and the reconciler (the batch lane) may read it, and nothing else.
resource "google_secret_manager_secret" "anthropic" {
  secret_id = "${var.name}-anthropic-api-key"
  replication {
    auto {}
  }
  depends_on = [google_project_service.api]
}

# The safety vault's key (var.safety_vault): deploy.sh adds a random first version; the functions that seal and
# open redacted values may read it (functions.tf's grants), and nothing else.
resource "google_secret_manager_secret" "vault" {
  count     = var.safety_vault ? 1 : 0
  secret_id = "${var.name}-vault-key"
  replication {
    auto {}
  }
  depends_on = [google_project_service.api]
}

output "api_url" {
  value = google_cloudfunctions2_function.fn["api"].service_config[0].uri
}

output "bucket" {
  value = google_storage_bucket.data.name
}

output "secret" {
  value = google_secret_manager_secret.anthropic.secret_id
}

output "vault_secret" {
  value = var.safety_vault ? google_secret_manager_secret.vault[0].secret_id : ""
}
