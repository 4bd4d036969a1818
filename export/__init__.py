"""SavedModel export for TF Serving: signatures over the shared preprocessing, versioned layout, warmup."""
