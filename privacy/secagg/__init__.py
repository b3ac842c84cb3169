"""Secure aggregation: the hub learns the sum of the sites' vectors and nothing else.

The protocol is that of Bonawitz et al., "Practical Secure Aggregation for
Privacy-Preserving Machine Learning" (CCS 2017), with signed key advertisements and the
consistency check of its actively secure version, and the sparse neighbour graphs of
SecAgg+ (Bell et al., CCS 2020) as an option. See
``docs/privacy.md`` for the threat model and what each party learns.

Modules: :mod:`~privacy.secagg.shamir` (t-of-n sharing), :mod:`~privacy.secagg.masking`
(ChaCha20 masks, X25519 seeds, modular encoding), :mod:`~privacy.secagg.graph`
(neighbourhoods), :mod:`~privacy.secagg.messages`, :mod:`~privacy.secagg.client` and
:mod:`~privacy.secagg.server` (the stages), :mod:`~privacy.secagg.local` (one round in one
process).
"""

from privacy.secagg.client import SecAggClient
from privacy.secagg.errors import MessageRejected, RoundAborted, SecAggError, ShareRejected
from privacy.secagg.local import Dropouts, generate_signing_keys, run_local_round, verify_keys_of
from privacy.secagg.masking import decode_signed, encode_fixed_point, encode_signed
from privacy.secagg.messages import (
    ConsistencySignature,
    EncryptedShare,
    KeyAdvertisement,
    MaskedInput,
    SecAggConfig,
    UnmaskResponse,
)
from privacy.secagg.server import SecAggServer

__all__ = [
    "ConsistencySignature",
    "Dropouts",
    "EncryptedShare",
    "KeyAdvertisement",
    "MaskedInput",
    "MessageRejected",
    "RoundAborted",
    "SecAggClient",
    "SecAggConfig",
    "SecAggError",
    "SecAggServer",
    "ShareRejected",
    "UnmaskResponse",
    "decode_signed",
    "encode_fixed_point",
    "encode_signed",
    "generate_signing_keys",
    "run_local_round",
    "verify_keys_of",
]
