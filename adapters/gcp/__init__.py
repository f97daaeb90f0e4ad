"""GCP adapter (Cloud Functions gen2 + Pub/Sub, Firestore/GCS/Secret Manager): Google SDKs only here."""
