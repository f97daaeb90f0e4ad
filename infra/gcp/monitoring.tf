# Alert policies that can fire with the shipped configuration: job messages getting old and dead letters
# (Pub/Sub's own metrics on this deployment's subscription), and the provider's error rate, from log-based
# metrics over the `provider.reply` and `provider.error` lines every worker writes (no exporter needed).

variable "alert_notification_channels" {
  description = "Cloud Monitoring notification channel ids the alert policies notify (empty: none)."
  type        = list(string)
  default     = []
}

resource "google_logging_metric" "provider_calls" {
  for_each = { replies = "provider.reply", errors = "provider.error" }
  name     = "${var.name}-provider-${each.key}"
  filter   = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${google_cloudfunctions2_function.fn["worker"].name}\" AND jsonPayload.event=\"${each.value}\""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
  }
}

resource "google_monitoring_alert_policy" "queue_age" {
  display_name          = "${var.name}: job messages waiting over 10 minutes"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels
  conditions {
    display_name = "oldest unacked job message older than 600 s"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = \"${google_pubsub_subscription.jobs.name}\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = 600
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
  documentation {
    content   = "Workers are not keeping up (or are failing before they ack). Check the worker's logs and the provider's rate limit."
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  display_name          = "${var.name}: a job was dead-lettered"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels
  conditions {
    display_name = "messages forwarded to the dead-letter topic"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = \"${google_pubsub_subscription.jobs.name}\" AND metric.type = \"pubsub.googleapis.com/subscription/dead_letter_message_count\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }
  documentation {
    content   = "The dead-letter function has marked the job; `alto --url ... dlq list` shows why, `dlq replay` retries it."
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "error_rate" {
  display_name          = "${var.name}: provider error rate over 20%"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels
  conditions {
    display_name = "failed provider calls / all calls over 5 minutes"
    condition_monitoring_query_language {
      query    = <<-MQL
        { fetch cloud_run_revision::logging.googleapis.com/user/${google_logging_metric.provider_calls["errors"].name}
            | align delta(5m) | every 5m | group_by [], [errors: sum(val())]
        ; fetch cloud_run_revision::logging.googleapis.com/user/${google_logging_metric.provider_calls["replies"].name}
            | align delta(5m) | every 5m | group_by [], [replies: sum(val())] }
        | outer_join 0, 0
        | value [rate: errors / (errors + replies + 0.000001)]
        | condition rate > 0.2
      MQL
      duration = "0s"
    }
  }
  documentation {
    content   = "Provider calls are failing (each `provider.error` log line says how). Check the provider's status and the circuit breaker (`alto breakers`)."
    mime_type = "text/markdown"
  }
}
