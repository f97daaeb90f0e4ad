variable "project" {
  description = "The Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region for the functions, bucket and Firestore database."
  type        = string
  default     = "us-central1"
}

variable "name" {
  description = "Prefix for every resource name."
  type        = string
  default     = "alto"
}

variable "source_archive" {
  description = "Zip of the function source built by deploy.sh (main.py, requirements.txt, core/, adapters/, altostratus.yaml)."
  type        = string
  default     = "build/function-source.zip"
}

variable "api_key_hashes" {
  description = "The first API keys, as hashes: tenant=sha256:...,tenant2=sha256:... (`alto config hash-key KEY`). A hash is safe in the environment; a raw key is not."
  type        = string
  default     = ""
}

variable "safety_vault" {
  description = "A safety policy redacts PII: make the vault's key secret (<name>-vault-key; deploy.sh stores a random key as its first version) and let the functions that seal and open values read it. The configuration names it as safety.vault_key: gcp-sm:<name>-vault-key."
  type        = bool
  default     = false
}

# ---- the one set of limits: every timeout, deadline, lease and wait below derives from these (main.tf locals)

variable "worker_timeout_s" {
  description = "Worker timeout in seconds; its push subscription's ack deadline is this plus 10 s, at most Pub/Sub's 600."
  type        = number
  default     = 540
  validation {
    condition     = var.worker_timeout_s >= 60 && var.worker_timeout_s <= 590
    error_message = "worker_timeout_s must be 60..590: the push subscription waits 10 s longer, and Pub/Sub's ack deadline is at most 600 s."
  }
}

variable "api_timeout_s" {
  description = "The api function's timeout in seconds; its long-polls and SSE streams end 5 s before it."
  type        = number
  default     = 60
  validation {
    condition     = var.api_timeout_s >= 10 && var.api_timeout_s <= 3600
    error_message = "api_timeout_s must be 10..3600 (an HTTP function's limit)."
  }
}

variable "max_delivery_attempts" {
  description = "Deliveries before Pub/Sub moves a job message to the dead-letter topic (Pub/Sub allows 5..100)."
  type        = number
  default     = 5
  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be 5..100 (Pub/Sub's dead-letter policy range)."
  }
}

variable "worker_max_instances" {
  description = "Most worker instances at once. The provider's rate limit is kept by the shared token buckets, not by this cap."
  type        = number
  default     = 10
}

variable "worker_concurrency" {
  description = "Deliveries one worker instance runs at once (they wait on the model, not the CPU). A push refused for want of capacity counts as a delivery attempt, so keep instances x concurrency above the expected burst."
  type        = number
  default     = 16
  validation {
    condition     = var.worker_concurrency >= 1 && var.worker_concurrency <= 1000
    error_message = "worker_concurrency must be 1..1000."
  }
}

# ---- container workers (`alto worker --cloud gcp` on GKE: infra/k8s/overlays/gcp, docs/clouds/containers.md)

variable "pull_workers" {
  description = "Create the pull subscription GKE workers read, and let their Kubernetes service account act as the worker's service account. Off until you run them: with nothing pulling it, every job's copy waits in it."
  type        = bool
  default     = false
}

variable "gke_worker_service_account" {
  description = "The Kubernetes service account the GKE workers run as, NAMESPACE/NAME (infra/k8s's base)."
  type        = string
  default     = "altostratus/altostratus-worker"
}
