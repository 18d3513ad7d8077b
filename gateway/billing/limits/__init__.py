"""Per-key RPM/TPM limits and spend budgets: the pure state machine (`core`) and its
two homes, one process (`memory`) or every process on one Redis (`redis`)."""
