"""The core both doors share: the boundaries (`checks`), the one recorder (`recorder`) and how a model is packaged
(`packaging`); and the two doors themselves, `train` (`training`) and `start_run` (`run`)."""
