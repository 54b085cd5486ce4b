"""The three stages of the FuSTAL pipeline (generator, filter, student), each a
:class:`~fustal.pipeline.stage.Stage`."""
