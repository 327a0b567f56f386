# Customer-managed keys, rotated yearly: one for data at rest (EKS secrets, RDS, ElastiCache, S3,
# ECR, Secrets Manager, AWS Backup), one for logs (CloudWatch Logs must be named in its policy),
# and one in the replica region for the copies.

data "aws_iam_policy_document" "data_key" {
  # checkov:skip=CKV_AWS_109: AWS's default key policy: the account's root delegates the key to IAM policies; "*" in a key policy means this key only.
  # checkov:skip=CKV_AWS_111: as above, the default key policy; IAM policies grant the actual use.
  # checkov:skip=CKV_AWS_356: in a key policy the resource "*" is the key itself.
  statement {
    sid       = "AccountAdministersTheKey"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "data" {
  description             = "${local.cluster_name}: data at rest"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.data_key.json
}

resource "aws_kms_alias" "data" {
  name          = "alias/${local.cluster_name}-data"
  target_key_id = aws_kms_key.data.key_id
}

resource "aws_kms_key" "replica" {
  provider                = aws.replica
  description             = "${local.cluster_name}: cross-region backup copies"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.data_key.json
}

resource "aws_kms_alias" "replica" {
  provider      = aws.replica
  name          = "alias/${local.cluster_name}-replica"
  target_key_id = aws_kms_key.replica.key_id
}

data "aws_iam_policy_document" "logs_key" {
  source_policy_documents = [data.aws_iam_policy_document.data_key.json]
  statement {
    sid       = "CloudWatchLogsUsesTheKey"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${var.region}:${local.account_id}:*"]
    }
  }
}

resource "aws_kms_key" "logs" {
  description             = "${local.cluster_name}: logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.logs_key.json
}

resource "aws_kms_alias" "logs" {
  name          = "alias/${local.cluster_name}-logs"
  target_key_id = aws_kms_key.logs.key_id
}
