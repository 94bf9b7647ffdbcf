"""Pipelines a job can run, one module each (calcium, organs), behind one protocol
(`protocol.Pipeline`) and a registry (`registry.build`: name -> pipeline); the series reading
they share (`series_reading`), the organ heart check (`heart_check`) and the outbox."""
