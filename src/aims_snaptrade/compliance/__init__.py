"""Compliance: consent store, tamper-evident audit trail, data export and erasure, gradual rollout.

See docs/compliance.md. PostgreSQL backends need the ``postgres`` extra (psycopg is imported only
when one is opened).
"""

from __future__ import annotations

from aims_snaptrade.compliance.audit import (
    AuditCheckpoint,
    AuditEvent,
    AuditKey,
    AuditRecord,
    AuditTrail,
    PostgresAuditTrail,
    PurgeReport,
    SQLAuditTrail,
    SQLiteAuditTrail,
    VerifyReport,
    audit_webhooks,
)
from aims_snaptrade.compliance.consent import (
    SCOPES,
    ConsentDecision,
    ConsentLookup,
    ConsentRecord,
    ConsentStore,
    PostgresConsentStore,
    SQLConsentStore,
    SQLiteConsentStore,
    as_consent_lookup,
)
from aims_snaptrade.compliance.factory import (
    audit_key_from_settings,
    audit_store_url,
    consent_store_url,
    open_audit_trail,
    open_consent_store,
)
from aims_snaptrade.compliance.personal_data import PersonalDataHolder, PersonalDataRegistry, PersonalDataStore
from aims_snaptrade.compliance.retention import purge_audit_trail, sweep_consents
from aims_snaptrade.compliance.rollout import Rollout

__all__ = [
    "SCOPES",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditKey",
    "AuditRecord",
    "AuditTrail",
    "ConsentDecision",
    "ConsentLookup",
    "ConsentRecord",
    "ConsentStore",
    "PersonalDataHolder",
    "PersonalDataRegistry",
    "PersonalDataStore",
    "PostgresAuditTrail",
    "PostgresConsentStore",
    "PurgeReport",
    "Rollout",
    "SQLAuditTrail",
    "SQLConsentStore",
    "SQLiteAuditTrail",
    "SQLiteConsentStore",
    "VerifyReport",
    "as_consent_lookup",
    "audit_key_from_settings",
    "audit_store_url",
    "audit_webhooks",
    "consent_store_url",
    "open_audit_trail",
    "open_consent_store",
    "purge_audit_trail",
    "sweep_consents",
]
