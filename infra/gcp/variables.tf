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

variable "max_delivery_attempts" {
  description = "Deliveries before Pub/Sub moves a job message to the dead-letter topic."
  type        = number
  default     = 5
}

variable "worker_max_instances" {
  description = "Most worker instances at once: size it to the provider's rate limit."
  type        = number
  default     = 10
}

variable "worker_timeout_s" {
  description = "Worker timeout in seconds (event-driven gen2 functions allow up to 540)."
  type        = number
  default     = 540
}
