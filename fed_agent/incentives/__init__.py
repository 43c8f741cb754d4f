"""The contract-driven round, framework-free: ES profiles, beliefs, contract policies,
participant selection, the ES's decision and the payment ledger."""
