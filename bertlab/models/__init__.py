"""The BERT model in Flax linen, its size table and ablation knobs (see bert.py for the tree)."""

from bertlab.models.bert import (BertForPreTraining, BertForSequenceClassification, BertModel,
                                 mean_pool)
from bertlab.models.config import (VARIANTS, BertConfig, ConfigError, count_params,
                                   flops_per_token, variant_config)

__all__ = ["BertConfig", "ConfigError", "VARIANTS", "variant_config", "count_params",
           "flops_per_token", "BertModel", "BertForPreTraining", "BertForSequenceClassification",
           "mean_pool"]
