"""The item-popularity baseline: an item's like rate in the training split, as a score for the test split."""

from sklearn.metrics import roc_auc_score


def item_popularity_auc(train, test) -> float:
    """AUC on `test` of scoring each row by its item's mean label in `train` (unseen items: the overall mean)."""
    train, test = train.to_pandas(), test.to_pandas()
    item_rate = test["item_id"].map(train.groupby("item_id")["label"].mean()).fillna(train["label"].mean())
    return roc_auc_score(test["label"], item_rate)
