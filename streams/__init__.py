"""The live runtime: faust agents over Kafka that drive `detectors` (the only package that imports faust)."""
