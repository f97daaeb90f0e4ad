# Alert policies: job messages getting old, anything dead-lettered, the provider's error rate.
# The first two read Pub/Sub's own metrics; the error rate reads the GenAI client metrics the
# workers export over OTLP (observability.otel), queried as Managed Service for Prometheus names.

variable "alert_notification_channels" {
  description = "Cloud Monitoring notification channel ids the alert policies notify (empty: none)."
  type        = list(string)
  default     = []
}

resource "google_monitoring_alert_policy" "queue_age" {
  display_name          = "${var.name}: job messages waiting over 10 minutes"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels
  conditions {
    display_name = "oldest unacked job message older than 600 s"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.label.subscription_id = monitoring.regex.full_match(\".*${google_cloudfunctions2_function.worker.event_trigger[0].trigger}.*\")"
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
    display_name = "messages published to the dead-letter topic"
    condition_threshold {
      filter          = "resource.type = \"pubsub_topic\" AND metric.type = \"pubsub.googleapis.com/topic/send_message_operation_count\" AND resource.label.topic_id = \"${google_pubsub_topic.dead.name}\""
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
    display_name = "failed GenAI calls / all calls over 5 minutes"
    condition_prometheus_query_language {
      query               = "sum(rate(gen_ai_client_operation_duration_seconds_count{error_type!=\"\"}[5m])) / sum(rate(gen_ai_client_operation_duration_seconds_count[5m])) > 0.2"
      duration            = "300s"
      evaluation_interval = "60s"
    }
  }
  documentation {
    content   = "Provider calls are failing (error.type on each call's span says how). Check the provider's status and the circuit breaker (`alto breakers`)."
    mime_type = "text/markdown"
  }
}
