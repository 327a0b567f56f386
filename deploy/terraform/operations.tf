# The platform's secret (filled once by hand, deploy/README.md step 7), AWS Backup with copies in
# the second region, the API's certificate, and the alarms that do not live in Prometheus.

# One JSON secret with the keys the chart reads (see deploy/helm/aigronova/values.yaml, `secrets`).
resource "aws_secretsmanager_secret" "platform" {
  # checkov:skip=CKV2_AWS_57: the values are the internal token's key pair, the admin key and database URLs; they are rotated by the runbook in deploy/README.md, not by a Lambda.
  name                    = "${var.name}/${var.environment}"
  description             = "AigroNova: internal token keys, admin key, database and Redis URLs, backup passphrase"
  kms_key_id              = aws_kms_key.data.arn
  recovery_window_in_days = 30
}

# --- AWS Backup: daily snapshots of RDS and continuous backups, copied to the second region ----

resource "aws_backup_vault" "this" {
  name          = local.cluster_name
  kms_key_arn   = aws_kms_key.data.arn
  force_destroy = false
}

resource "aws_backup_vault" "replica" {
  provider      = aws.replica
  name          = "${local.cluster_name}-replica"
  kms_key_arn   = aws_kms_key.replica.arn
  force_destroy = false
}

# Recovery points cannot be deleted early, even by an administrator, once the lock is past its
# grace period (3 days after apply).
resource "aws_backup_vault_lock_configuration" "this" {
  backup_vault_name   = aws_backup_vault.this.name
  min_retention_days  = 7
  max_retention_days  = 400
  changeable_for_days = 3
}

resource "aws_backup_vault_lock_configuration" "replica" {
  provider            = aws.replica
  backup_vault_name   = aws_backup_vault.replica.name
  min_retention_days  = 7
  max_retention_days  = 400
  changeable_for_days = 3
}

resource "aws_backup_plan" "this" {
  name = local.cluster_name

  # Continuous backup: restore to any second of the last 35 days.
  rule {
    rule_name                = "continuous"
    target_vault_name        = aws_backup_vault.this.name
    schedule                 = "cron(0 * * * ? *)"
    enable_continuous_backup = true
    lifecycle {
      delete_after = 35
    }
  }

  # A daily snapshot kept 35 days here and 90 days in the second region.
  rule {
    rule_name         = "daily"
    target_vault_name = aws_backup_vault.this.name
    schedule          = "cron(30 4 * * ? *)"
    lifecycle {
      delete_after = 35
    }
    copy_action {
      destination_vault_arn = aws_backup_vault.replica.arn
      lifecycle {
        delete_after = 90
      }
    }
  }
}

resource "aws_iam_role" "backup" {
  name = "${local.cluster_name}-aws-backup"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "backup.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "backup" {
  for_each   = toset(["AWSBackupServiceRolePolicyForBackup", "AWSBackupServiceRolePolicyForRestores"])
  role       = aws_iam_role.backup.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/${each.value}"
}

resource "aws_backup_selection" "this" {
  name         = "${local.cluster_name}-databases"
  plan_id      = aws_backup_plan.this.id
  iam_role_arn = aws_iam_role.backup.arn
  resources    = [aws_db_instance.this.arn]
}

# --- the API's certificate ---------------------------------------------------------------------

resource "aws_acm_certificate" "api" {
  domain_name               = var.api_domain
  subject_alternative_names = var.extra_domains
  validation_method         = "DNS"
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "api_validation" {
  for_each = var.route53_zone_id == "" ? {} : {
    for option in aws_acm_certificate.api.domain_validation_options : option.domain_name => option
  }

  zone_id = var.route53_zone_id
  name    = each.value.resource_record_name
  type    = each.value.resource_record_type
  records = [each.value.resource_record_value]
  ttl     = 300
}

resource "aws_acm_certificate_validation" "api" {
  count                   = var.route53_zone_id == "" ? 0 : 1
  certificate_arn         = aws_acm_certificate.api.arn
  validation_record_fqdns = [for record in aws_route53_record.api_validation : record.fqdn]
}

# --- alarms ------------------------------------------------------------------------------------

resource "aws_sns_topic" "alarms" {
  name              = "${local.cluster_name}-alarms"
  kms_master_key_id = aws_kms_key.data.arn
}

resource "aws_sns_topic_subscription" "alarms_email" {
  count     = var.alert_email == "" ? 0 : 1
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alert_email
}

# ACM renews a DNS-validated certificate by itself; this fires when renewal is stuck (a removed
# validation record), three weeks ahead.
resource "aws_cloudwatch_metric_alarm" "certificate_expiry" {
  alarm_name          = "${local.cluster_name}-api-certificate-expiry"
  alarm_description   = "The API certificate expires in less than 21 days: check its DNS validation record."
  namespace           = "AWS/CertificateManager"
  metric_name         = "DaysToExpiry"
  dimensions          = { CertificateArn = aws_acm_certificate.api.arn }
  statistic           = "Minimum"
  period              = 86400
  evaluation_periods  = 1
  comparison_operator = "LessThanThreshold"
  threshold           = 21
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "database_storage" {
  alarm_name          = "${local.cluster_name}-database-free-storage"
  alarm_description   = "PostgreSQL has less than 10 GiB free (storage autoscaling is capped at the plan's maximum)."
  namespace           = "AWS/RDS"
  metric_name         = "FreeStorageSpace"
  dimensions          = { DBInstanceIdentifier = aws_db_instance.this.identifier }
  statistic           = "Minimum"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 10 * 1024 * 1024 * 1024
  alarm_actions       = [aws_sns_topic.alarms.arn]
}
