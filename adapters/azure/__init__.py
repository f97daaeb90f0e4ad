"""Azure adapter (Functions v2 + Service Bus, Table/Blob/Key Vault): Azure SDKs only here."""
