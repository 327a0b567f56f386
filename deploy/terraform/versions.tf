# AigroNova on AWS: VPC over three zones, EKS (on-demand and spot node groups), RDS PostgreSQL
# Multi-AZ, ElastiCache Redis, S3 with lifecycle rules and cross-region replication, KMS, ECR, IRSA
# roles, AWS Backup with cross-region copies. deploy/README.md walks through `terraform apply`.

terraform {
  required_version = ">= 1.10.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # State in S3 with S3-native locking; the bucket is made once by hand (deploy/README.md, step 2)
  # and named at `terraform init -backend-config=backend.hcl`.
  backend "s3" {
    use_lockfile = true
    encrypt      = true
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = local.tags
  }
}

# The second region: cross-region copies of backups and of the backup bucket.
provider "aws" {
  alias  = "replica"
  region = var.replica_region
  default_tags {
    tags = local.tags
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
