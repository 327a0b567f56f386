# PostgreSQL (one database per service on a Multi-AZ instance) and Redis, in the database subnets,
# reachable only from the cluster's nodes and pods.

resource "aws_security_group" "database" {
  name        = "${local.cluster_name}-database"
  description = "PostgreSQL and Redis, from the EKS cluster only"
  vpc_id      = aws_vpc.this.id

  ingress {
    description     = "PostgreSQL from the cluster"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [aws_eks_cluster.this.vpc_config[0].cluster_security_group_id]
  }

  ingress {
    description     = "Redis from the cluster"
    from_port       = 6379
    to_port         = 6379
    protocol        = "tcp"
    security_groups = [aws_eks_cluster.this.vpc_config[0].cluster_security_group_id]
  }

  egress {
    description = "Answers stay in the VPC"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = [var.vpc_cidr]
  }
}

resource "aws_db_subnet_group" "this" {
  name       = local.cluster_name
  subnet_ids = aws_subnet.database[*].id
}

resource "aws_db_parameter_group" "this" {
  name   = "${local.cluster_name}-postgres17"
  family = "postgres17"

  parameter {
    name  = "rds.force_ssl"
    value = var.database_require_tls ? "1" : "0"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name = "${local.cluster_name}-rds-monitoring"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "monitoring.rds.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "this" {
  # checkov:skip=CKV2_AWS_69: the aigronova binary's PostgreSQL driver has no TLS yet (variable database_require_tls); the instance sits in subnets without a route out, reachable only from the cluster.
  identifier     = local.cluster_name
  engine         = "postgres"
  engine_version = "17"
  instance_class = local.size.db_instance_class

  allocated_storage     = local.size.db_storage_gb
  max_allocated_storage = local.size.db_max_storage_gb
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.data.arn

  db_name                       = "postgres"
  username                      = "aigronova_admin"
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.data.arn

  multi_az               = true
  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.database.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.this.name

  # Point-in-time recovery over 35 days, copied to the replica region below; AWS Backup adds daily
  # snapshots in its vaults.
  backup_retention_period   = 35
  backup_window             = "03:00-04:00"
  maintenance_window        = "sun:05:00-sun:06:00"
  copy_tags_to_snapshot     = true
  deletion_protection       = true
  skip_final_snapshot       = false
  final_snapshot_identifier = "${local.cluster_name}-final"

  auto_minor_version_upgrade            = true
  iam_database_authentication_enabled   = true
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.data.arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
}

# The automated backups (snapshots and transaction logs) replicated to the second region, so a
# point-in-time restore works there too.
resource "aws_db_instance_automated_backups_replication" "this" {
  provider               = aws.replica
  source_db_instance_arn = aws_db_instance.this.arn
  kms_key_id             = aws_kms_key.replica.arn
  retention_period       = 14
}

resource "aws_elasticache_subnet_group" "this" {
  name       = local.cluster_name
  subnet_ids = aws_subnet.database[*].id
}

resource "random_password" "redis" {
  length  = 48
  special = false
}

# The gateway's monthly inference counters share this Redis with finquantum's page cache: when
# memory runs short, the keys closest to expiring go first (the cache's pages, minutes; the rate
# limits' state, seconds), and the month's counters, which expire a week after their month, last.
resource "aws_elasticache_parameter_group" "this" {
  name   = "${local.cluster_name}-redis"
  family = "redis7"

  parameter {
    name  = "maxmemory-policy"
    value = "volatile-ttl"
  }
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id = local.cluster_name
  description          = "AigroNova: rate limits and key revocation shared by the gateway replicas"
  engine               = "redis"
  engine_version       = "7.1"
  node_type            = local.size.cache_node_type
  num_cache_clusters   = 1 + local.size.cache_replicas
  port                 = 6379
  parameter_group_name = aws_elasticache_parameter_group.this.name

  automatic_failover_enabled = true
  multi_az_enabled           = true
  subnet_group_name          = aws_elasticache_subnet_group.this.name
  security_group_ids         = [aws_security_group.database.id]

  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.data.arn
  transit_encryption_enabled = true
  auth_token                 = random_password.redis.result

  snapshot_retention_limit   = 7
  snapshot_window            = "04:00-05:00"
  maintenance_window         = "sun:06:00-sun:07:00"
  auto_minor_version_upgrade = true
  apply_immediately          = false
}
