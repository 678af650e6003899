"""The services: the verbs' logic (migrate steps, plan, drift, fleet, lint, image, the credential
gate, the local stack, the dev loop, reports and metrics), over the adapters, the config and the
core, and importing none of the orchestration above them."""
