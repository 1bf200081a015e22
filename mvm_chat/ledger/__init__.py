"""The cost ledger: pricing, ledger rows, budgets and reports."""
