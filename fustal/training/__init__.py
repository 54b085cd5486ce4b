"""Lightning-side pieces shared by the stages, the entry points and the modules: process-group
helpers, callbacks, the Trainer factory and the loggers."""
