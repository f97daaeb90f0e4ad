# Altostratus on Google Cloud: Cloud Functions gen2 + Pub/Sub + Firestore + Cloud Storage + Secret Manager.
#   terraform init && terraform apply -var project=my-project    (after ./deploy.sh --build-only)
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
  env = {
    ALTO_GCP_PROJECT         = var.project
    ALTO_TOPIC               = local.topic
    ALTO_BUCKET              = google_storage_bucket.data.name
    ALTO_CONFIG              = "altostratus.yaml"
    ALTO_FIRESTORE_DATABASE  = google_firestore_database.this.name
    ALTO_QUEUE__MAX_RECEIVES = tostring(var.max_delivery_attempts)
    ALTO_FUNCTION_TIMEOUT_S  = tostring(var.worker_timeout_s)
  }
}

# ---- messaging
resource "google_pubsub_topic" "jobs" {
  name = local.topic
}

resource "google_pubsub_topic" "dead" {
  name = local.dead_topic
}

# Pub/Sub itself moves undeliverable messages: it must publish to the dead-letter topic and
# acknowledge on the worker's subscription.
resource "google_pubsub_topic_iam_member" "dead_publisher" {
  topic  = google_pubsub_topic.dead.name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${local.pubsub_sa}"
}

# ---- storage
resource "google_firestore_database" "this" {
  name        = "${var.name}-db"
  location_id = var.region
  type        = "FIRESTORE_NATIVE"
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

resource "google_firestore_index" "jobs_by_status" { # the reconciler: status == X, updated_at < T
  database   = google_firestore_database.this.name
  collection = "jobs"
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "updated_at"
    order      = "ASCENDING"
  }
}

resource "google_firestore_index" "jobs_by_tenant" { # listings: tenant == X, newest first
  database   = google_firestore_database.this.name
  collection = "jobs"
  fields {
    field_path = "tenant"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

resource "google_storage_bucket" "data" {
  name                        = "${var.project}-${var.name}-data"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  lifecycle_rule {
    condition {
      age            = 15
      matches_prefix = ["claim-check/"]
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket" "source" {
  name                        = "${var.project}-${var.name}-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
}

resource "google_storage_bucket_object" "source" {
  name   = "function-source-${filemd5(var.source_archive)}.zip"
  bucket = google_storage_bucket.source.name
  source = var.source_archive
}

resource "google_secret_manager_secret" "anthropic" {
  secret_id = "${var.name}-anthropic-api-key"
  replication {
    auto {}
  }
}
