"""The conformance suite: one readable pytest module per property.

Collected by the unlearn-audit plugin when `--unlearner` is given; each test is
parametrized over unlearner x scenario x seed and judged by `audit_case.judge()`, which
fails the test with the score, its uncertainty, retrain's reference and the rule applied.
"""
