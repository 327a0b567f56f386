output "region" {
  description = "The platform's region."
  value       = var.region
}

output "cluster_name" {
  description = "EKS cluster: aws eks update-kubeconfig --name <this> --region <region>."
  value       = aws_eks_cluster.this.name
}

output "vpc_id" {
  description = "For the AWS Load Balancer Controller (--set vpcId=…)."
  value       = aws_vpc.this.id
}

output "ecr_repositories" {
  description = "Image repositories, by name."
  value       = { for name, repository in aws_ecr_repository.this : name => repository.repository_url }
}

output "ci_role_arn" {
  description = "The role GitHub Actions assumes (repository variable AWS_CI_ROLE_ARN)."
  value       = aws_iam_role.ci.arn
}

output "irsa_role_arns" {
  description = "IRSA roles by service account: the add-ons', the backup job's and each component's."
  value       = { for name, role in aws_iam_role.irsa : name => role.arn }
}

output "database_endpoint" {
  description = "PostgreSQL host:port; the master password is in Secrets Manager (database_master_secret_arn)."
  value       = aws_db_instance.this.endpoint
}

output "database_master_secret_arn" {
  description = "Secret holding the RDS master user's password, managed by RDS."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "redis_url" {
  description = "The gateway's redis-url (TLS, with the AUTH token)."
  value       = "rediss://:${random_password.redis.result}@${aws_elasticache_replication_group.this.primary_endpoint_address}:6379"
  sensitive   = true
}

output "secrets_manager_secret_name" {
  description = "The platform secret the chart reads through External Secrets (secrets.externalSecrets.remoteKey)."
  value       = aws_secretsmanager_secret.platform.name
}

output "certificate_arn" {
  description = "ACM certificate of the API host (ingress.certificateArn)."
  value       = aws_acm_certificate.api.arn
}

output "certificate_validation_records" {
  description = "DNS records that validate the certificate, to add by hand when route53_zone_id is empty."
  value       = aws_acm_certificate.api.domain_validation_options
}

output "backup_target" {
  description = "Where the backup job writes (backup.target)."
  value       = "s3://${aws_s3_bucket.backups.bucket}/postgres"
}

output "backup_kms_key_arn" {
  description = "KMS key of the backup bucket (backup.kmsKeyId)."
  value       = aws_kms_key.data.arn
}

output "objects_bucket" {
  description = "The platform's objects (healthquantum's reports and images): services.healthquantum.objectsUrl is s3://<this>/healthquantum."
  value       = aws_s3_bucket.objects.bucket
}

output "helm_values" {
  description = "The chart values this infrastructure determines; merge them into the Argo CD Application."
  value = {
    planSize = var.plan_size
    image    = { repository = aws_ecr_repository.this["aigronova"].repository_url }
    aws      = { region = var.region }
    gateway  = { roleArn = aws_iam_role.irsa["gateway"].arn }
    services = {
      # Its reports and medical images, in S3 with its IRSA role: one store for every replica.
      healthquantum = {
        objectsUrl = "s3://${aws_s3_bucket.objects.bucket}/healthquantum"
        roleArn    = aws_iam_role.irsa["healthquantum"].arn
      }
    }
    ingress = {
      host             = var.api_domain
      certificateArn   = aws_acm_certificate.api.arn
      accessLogsBucket = aws_s3_bucket.access_logs.bucket
    }
    secrets = { externalSecrets = { remoteKey = aws_secretsmanager_secret.platform.name } }
    backup = {
      target   = "s3://${aws_s3_bucket.backups.bucket}/postgres"
      kmsKeyId = aws_kms_key.data.arn
      roleArn  = aws_iam_role.irsa["backup"].arn
      image    = { repository = aws_ecr_repository.this["aigronova-backup"].repository_url }
    }
  }
}
