# One service account per function, each granted only what its code path calls.
resource "google_service_account" "fn" {
  for_each     = toset(["api", "worker", "dead-letter", "reconcile"])
  account_id   = "${var.name}-${each.key}"
  display_name = "Altostratus ${each.key} function"
}

locals {
  roles = {
    api         = ["roles/datastore.user"]
    worker      = ["roles/datastore.user"]
    dead-letter = ["roles/datastore.user"]
    reconcile   = ["roles/datastore.user"]
  }
  grants = flatten([for fn, roles in local.roles : [for r in roles : { fn = fn, role = r }]])
}

resource "google_project_iam_member" "fn" {
  for_each = { for g in local.grants : "${g.fn}/${g.role}" => g }
  project  = var.project
  role     = each.value.role
  member   = "serviceAccount:${google_service_account.fn[each.value.fn].email}"
}

resource "google_pubsub_topic_iam_member" "publish_jobs" { # submit, defer and reconcile publish jobs
  for_each = toset(["api", "worker", "reconcile"])
  topic    = google_pubsub_topic.jobs.name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.fn[each.key].email}"
}

resource "google_storage_bucket_iam_member" "data" { # claim-checks, documents, index snapshots
  for_each = toset(["api", "worker", "dead-letter", "reconcile"])
  bucket   = google_storage_bucket.data.name
  role     = each.key == "worker" || each.key == "api" || each.key == "reconcile" ? "roles/storage.objectUser" : "roles/storage.objectViewer"
  member   = "serviceAccount:${google_service_account.fn[each.key].email}"
}

resource "google_secret_manager_secret_iam_member" "anthropic" { # only the worker calls the model
  secret_id = google_secret_manager_secret.anthropic.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.fn["worker"].email}"
}

resource "google_cloudfunctions2_function" "api" {
  name     = "${var.name}-api"
  location = var.region
  build_config {
    runtime     = "python312"
    entry_point = "api"
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }
  service_config {
    available_memory      = "512M"
    timeout_seconds       = 30
    max_instance_count    = 20
    service_account_email = google_service_account.fn["api"].email
    environment_variables = local.env
  }
}

resource "google_cloudfunctions2_function" "worker" {
  name     = "${var.name}-worker"
  location = var.region
  build_config {
    runtime     = "python312"
    entry_point = "worker"
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }
  service_config {
    available_memory                 = "1Gi"
    timeout_seconds                  = var.worker_timeout_s
    max_instance_count               = var.worker_max_instances
    max_instance_request_concurrency = 1
    service_account_email            = google_service_account.fn["worker"].email
    environment_variables            = local.env
  }
  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.jobs.id
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.fn["worker"].email
  }
}

resource "google_cloudfunctions2_function" "dead_letter" {
  name     = "${var.name}-dead-letter"
  location = var.region
  build_config {
    runtime     = "python312"
    entry_point = "dead_letter"
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }
  service_config {
    available_memory      = "512M"
    timeout_seconds       = 60
    max_instance_count    = 5
    service_account_email = google_service_account.fn["dead-letter"].email
    environment_variables = local.env
  }
  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.dead.id
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.fn["dead-letter"].email
  }
}

resource "google_cloudfunctions2_function" "reconcile" {
  name     = "${var.name}-reconcile"
  location = var.region
  build_config {
    runtime     = "python312"
    entry_point = "reconcile"
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }
  service_config {
    available_memory      = "256M"
    timeout_seconds       = 120
    max_instance_count    = 1
    ingress_settings      = "ALLOW_INTERNAL_ONLY"
    service_account_email = google_service_account.fn["reconcile"].email
    environment_variables = local.env
  }
}

resource "google_cloud_scheduler_job" "reconcile" {
  name     = "${var.name}-reconcile"
  schedule = "*/5 * * * *"
  http_target {
    uri         = google_cloudfunctions2_function.reconcile.service_config[0].uri
    http_method = "POST"
    oidc_token {
      service_account_email = google_service_account.fn["reconcile"].email
    }
  }
}

# The worker's subscription is created by Eventarc, and the provider can't set its dead-letter
# policy (hashicorp/terraform-provider-google#25069): apply it with the native CLI, as deploy.sh does.
resource "terraform_data" "worker_dead_letter_policy" {
  triggers_replace = [google_cloudfunctions2_function.worker.event_trigger[0].trigger, var.max_delivery_attempts]
  provisioner "local-exec" {
    command = "${path.module}/deploy.sh --dead-letter-only"
    environment = {
      PROJECT               = var.project
      REGION                = var.region
      NAME                  = var.name
      MAX_DELIVERY_ATTEMPTS = tostring(var.max_delivery_attempts)
    }
  }
}

# Eventarc and Cloud Scheduler call the functions as their own service accounts: each may invoke
# its function only.
resource "google_cloud_run_service_iam_member" "invoker" {
  for_each = {
    worker      = google_cloudfunctions2_function.worker.name
    dead-letter = google_cloudfunctions2_function.dead_letter.name
    reconcile   = google_cloudfunctions2_function.reconcile.name
  }
  location = var.region
  service  = each.value
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.fn[each.key].email}"
}
