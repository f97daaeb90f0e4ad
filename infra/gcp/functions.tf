# The four functions, one service account each, and exactly what each one's code calls: the grants are the
# table below, and every binding is made from it. tests/test_gcp_deploy.py runs each function in its own
# process on the emulators, records every cloud call it makes, and checks both directions against this
# table: each call granted (predefined roles expanded to the permissions Google documents for them), and
# each grant needed by some call.
locals {
  data_objects = "projects/_/buckets/${google_storage_bucket.data.name}/objects/"
  grants = {
    api = {
      firestore = true # jobs, idempotency keys, stream progress, usage
      publish   = true # submit, replay
      secret    = false
      vault     = true # a redacting policy: values sealed at submit, opened for reads (with var.safety_vault)
      objects = {
        # a big input or an image stashed, a given document checked; a spilled stream replayed; an erased
        # thread's images and streams deleted
        "roles/storage.objectUser" = ["workflow-inputs/", "streams/"]
      }
    }
    worker = {
      firestore = true
      publish   = true # defer, retry copies, workflow fan-out, callbacks
      secret    = true # the model's API key
      vault     = true # values the model writes masked; a callback's view opened
      objects = {
        "roles/storage.objectViewer" = ["workflow-inputs/", "indexes/"] # documents, index snapshots
        "roles/storage.objectUser"   = ["streams/", "audit/"]           # a long stream spills; the audit log
      }
    }
    dead-letter = {
      firestore = true
      publish   = true # a dead-lettered job's callback and its workflow parent's wake-up
      secret    = false
      vault     = false
      objects   = {}
    }
    reconcile = {
      firestore = true
      publish   = true # lost messages re-sent
      secret    = true # the batch lane calls the provider's batch API
      vault     = true # values the model writes in a batched answer masked
      objects   = {}
    }
  }
  object_grants = flatten([for fn, g in local.grants : [for role, prefixes in g.objects : {
    fn = fn, role = role, prefixes = prefixes
  }]])

  # the functions themselves: what differs between them
  functions = {
    api = {
      entry   = "api", memory = "512M", cpu = "1", timeout = var.api_timeout_s, max_instances = 20, concurrency = 80
      ingress = "ALLOW_ALL" # public, behind the app's own API keys (see the invoker below)
    }
    worker = {
      entry         = "worker", memory = "1Gi", cpu = "1", timeout = var.worker_timeout_s,
      max_instances = var.worker_max_instances, concurrency = var.worker_concurrency, ingress = "ALLOW_INTERNAL_ONLY"
    }
    dead-letter = {
      entry   = "dead_letter", memory = "512M", cpu = "1", timeout = 60, max_instances = 5, concurrency = 8,
      ingress = "ALLOW_INTERNAL_ONLY"
    }
    reconcile = {
      entry   = "reconcile", memory = "512M", cpu = "1", timeout = 120, max_instances = 1, concurrency = 1,
      ingress = "ALLOW_INTERNAL_ONLY"
    }
  }
}

resource "google_service_account" "fn" {
  for_each     = local.functions
  account_id   = "${var.name}-${each.key}"
  display_name = "Altostratus ${each.key} function"
}

# the identity Pub/Sub pushes as, and the one Cloud Scheduler calls the reconciler as: each may invoke only
# the functions it delivers to
resource "google_service_account" "push" {
  account_id   = "${var.name}-push"
  display_name = "Altostratus Pub/Sub push deliveries"
}

resource "google_service_account" "scheduler" {
  account_id   = "${var.name}-scheduler"
  display_name = "Altostratus reconcile schedule"
}

# Firestore: this deployment's database only
resource "google_project_iam_member" "firestore" {
  for_each = { for fn, g in local.grants : fn => g if g.firestore }
  project  = var.project
  role     = "roles/datastore.user"
  member   = "serviceAccount:${google_service_account.fn[each.key].email}"
  condition {
    title      = "${var.name}-db-only"
    expression = "resource.name == \"projects/${var.project}/databases/${google_firestore_database.this.name}\""
  }
}

resource "google_pubsub_topic_iam_member" "publish" {
  for_each = { for fn, g in local.grants : fn => g if g.publish }
  topic    = google_pubsub_topic.jobs.name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.fn[each.key].email}"
}

resource "google_secret_manager_secret_iam_member" "anthropic" {
  for_each  = { for fn, g in local.grants : fn => g if g.secret }
  secret_id = google_secret_manager_secret.anthropic.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.fn[each.key].email}"
}

resource "google_secret_manager_secret_iam_member" "vault" {
  for_each  = { for fn, g in local.grants : fn => g if g.vault && var.safety_vault }
  secret_id = google_secret_manager_secret.vault[0].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.fn[each.key].email}"
}

# objects by prefix: the condition names each prefix for the objects in it and for listings of it
resource "google_storage_bucket_iam_member" "objects" {
  for_each = { for g in local.object_grants : "${g.fn}/${g.role}" => g }
  bucket   = google_storage_bucket.data.name
  role     = each.value.role
  member   = "serviceAccount:${google_service_account.fn[each.value.fn].email}"
  condition {
    title = "${each.value.fn}-${replace(each.value.role, "roles/storage.", "")}-prefixes"
    expression = join(" || ", flatten([for p in each.value.prefixes : [
      "resource.name.startsWith(\"${local.data_objects}${p}\")",
      "api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"${p}\")",
    ]]))
  }
}

resource "google_cloudfunctions2_function" "fn" {
  #checkov:skip=CKV_GCP_124:only the api is ALLOW_ALL (public by design, behind the app's API keys); worker, dead-letter and reconcile are ALLOW_INTERNAL_ONLY, reached by Pub/Sub push and Cloud Scheduler
  for_each = local.functions
  name     = "${var.name}-${each.key}"
  location = var.region
  build_config {
    runtime     = "python312"
    entry_point = each.value.entry
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }
  service_config {
    available_memory                 = each.value.memory
    available_cpu                    = each.value.cpu
    timeout_seconds                  = each.value.timeout
    max_instance_count               = each.value.max_instances
    max_instance_request_concurrency = each.value.concurrency
    ingress_settings                 = each.value.ingress
    service_account_email            = google_service_account.fn[each.key].email
    environment_variables            = local.env
  }
  depends_on = [google_project_service.api]
}

# The api is public: Google's front end lets any caller through, and the app's own keys (Authorization:
# Bearer, hashed in ALTO_API_KEY_HASHES) decide. IAM-authenticated invocation would claim the same header
# for a Google identity token; put an API gateway in front instead if callers should hold Google identities.
resource "google_cloud_run_service_iam_member" "api_public" {
  #checkov:skip=CKV_GCP_102:the api is public by design: its own API keys authenticate every request but /healthz and /openapi.json
  location = var.region
  service  = google_cloudfunctions2_function.fn["api"].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_cloud_run_service_iam_member" "pushed" {
  for_each = toset(["worker", "dead-letter"])
  location = var.region
  service  = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.push.email}"
}

resource "google_cloud_run_service_iam_member" "scheduled" {
  location = var.region
  service  = google_cloudfunctions2_function.fn["reconcile"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_cloud_scheduler_job" "reconcile" {
  name             = "${var.name}-reconcile"
  schedule         = "*/5 * * * *"
  attempt_deadline = "${local.functions["reconcile"].timeout + 30}s"
  http_target {
    uri         = google_cloudfunctions2_function.fn["reconcile"].service_config[0].uri
    http_method = "POST"
    oidc_token {
      service_account_email = google_service_account.scheduler.email
    }
  }
  depends_on = [google_project_service.api]
}
