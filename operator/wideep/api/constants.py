"""Names shared by every layer: API group, labels, condition types and reasons, field manager."""

from __future__ import annotations

from typing import Final

GROUP: Final = "wideep.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ParallelDeployment"
PLURAL: Final = "paralleldeployments"
SINGULAR: Final = "paralleldeployment"
SHORT_NAMES: Final = ("pdep",)
CATEGORIES: Final = ("wideep", "vllm")
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

FIELD_MANAGER: Final = "wideep-operator"

# Labels on every object the operator creates.
LABEL_DEPLOYMENT: Final = f"{GROUP}/deployment"
LABEL_POD_INDEX: Final = f"{GROUP}/pod-index"
LABEL_DP_RANK: Final = f"{GROUP}/dp-rank"
LABEL_CONFIG_HASH: Final = f"{GROUP}/config-hash"
LABEL_TEMPLATE_HASH: Final = f"{GROUP}/template-hash"
LABEL_COMPONENT: Final = f"{GROUP}/component"
LABEL_SERVES_HTTP: Final = f"{GROUP}/serves-http"
COMPONENT_RANK: Final = "rank"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "wideep"

# Annotations.
ANNOTATION_RETRY: Final = f"{GROUP}/retry"
"""Set to any new value to reset an exhausted restart budget and try again."""
ANNOTATION_GROUP_GENERATION: Final = f"{GROUP}/group-generation"
ANNOTATION_RANKS: Final = f"{GROUP}/dp-ranks"

# Condition types (kstatus-compatible: Ready is the summary; Progressing/Degraded are abnormal-true).
COND_VALID: Final = "Valid"
COND_READY: Final = "Ready"
COND_PROGRESSING: Final = "Progressing"
COND_DEGRADED: Final = "Degraded"
CONDITION_TYPES: Final = (COND_VALID, COND_READY, COND_PROGRESSING, COND_DEGRADED)

# Condition reasons.
REASON_SPEC_VALID: Final = "SpecValid"
REASON_INVALID_SPEC: Final = "InvalidSpec"
REASON_POD_REJECTED: Final = "PodRejected"  # the API server refuses the spec's rank pods (a dry-run create)
REASON_ALL_RANKS_READY: Final = "AllRanksReady"
REASON_RANKS_NOT_READY: Final = "RanksNotReady"
REASON_CREATING: Final = "CreatingGroup"
REASON_WAITING_FOR_RANKS: Final = "WaitingForRanks"
REASON_INSUFFICIENT_CAPACITY: Final = "InsufficientCapacity"
REASON_GROUP_RESTARTING: Final = "GroupRestarting"
REASON_RESTART_BACKOFF: Final = "RestartBackoff"
REASON_RESTART_BUDGET_EXHAUSTED: Final = "RestartBudgetExhausted"
REASON_RANK_FAILED: Final = "RankFailed"
REASON_ROLLING_OUT: Final = "ReplacingGroup"
REASON_STABLE: Final = "Stable"
REASON_HEALTHY: Final = "Healthy"
REASON_RESTARTS_DISABLED: Final = "RestartPolicyNever"

# Event reasons.
EVENT_GROUP_CREATED: Final = "GroupCreated"
EVENT_GROUP_RESTARTED: Final = "GroupRestarted"
EVENT_GROUP_REPLACED: Final = "GroupReplaced"
EVENT_RANK_FAILED: Final = "RankFailed"
EVENT_BUDGET_EXHAUSTED: Final = "RestartBudgetExhausted"
EVENT_DEPRECATED_FIELD: Final = "DeprecatedField"
EVENT_INVALID_SPEC: Final = "InvalidSpec"
EVENT_GROUP_READY: Final = "GroupReady"
