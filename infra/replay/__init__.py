"""The blue/green read-model rebuild: from the store or Kafka, compared, swapped in."""
