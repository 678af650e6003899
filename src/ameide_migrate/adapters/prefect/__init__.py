"""The Prefect API, one concern a module: the local server and its worker, which API a command
talks to, the automations, approvals, runs and their artifacts."""
