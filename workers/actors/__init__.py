"""Actor modules, one per feature; app.wiring.ACTOR_MODULES lists the ones workers load."""
