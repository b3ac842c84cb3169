"""Differential privacy, budget accounting and signing shared by the agent and the hub.

See ``docs/privacy.md`` for the threat model, the unit of privacy and the parameters.
"""

from privacy.accountant import PrivacyAccountant
from privacy.bounding import bound_keys_per_unit, sample_per_unit
from privacy.errors import (
    BudgetExhausted,
    InvalidPrivacyParameter,
    KeyFileInvalid,
    LedgerConflict,
    PrivacyError,
    SignatureInvalid,
)
from privacy.ledger import BudgetStatus, PrivacyLedger
from privacy.mechanisms import (
    DiscreteLaplaceMechanism,
    add_discrete_laplace_noise,
    sample_discrete_gaussian,
    sample_discrete_laplace,
)
from privacy.partition import partition_threshold, select_partitions
from privacy.random import RandomSource, seeded_random, system_random
from privacy.signing import (
    SigningKey,
    canonical_json,
    generate_signing_key,
    sign_object,
    verify_object,
)

__all__ = [
    "BudgetExhausted",
    "BudgetStatus",
    "DiscreteLaplaceMechanism",
    "InvalidPrivacyParameter",
    "KeyFileInvalid",
    "LedgerConflict",
    "PrivacyAccountant",
    "PrivacyError",
    "PrivacyLedger",
    "RandomSource",
    "SignatureInvalid",
    "SigningKey",
    "add_discrete_laplace_noise",
    "bound_keys_per_unit",
    "canonical_json",
    "generate_signing_key",
    "partition_threshold",
    "sample_discrete_gaussian",
    "sample_discrete_laplace",
    "sample_per_unit",
    "seeded_random",
    "select_partitions",
    "sign_object",
    "system_random",
    "verify_object",
]
