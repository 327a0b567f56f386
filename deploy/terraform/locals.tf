locals {
  tags = {
    project     = var.name
    environment = var.environment
    managed-by  = "terraform"
  }

  azs = slice(data.aws_availability_zones.available.names, 0, 3)

  # What each plan size gets. Pods request 1 CPU / 2 GiB by default (the chart's values).
  sizes = {
    starter = {
      node_instance_types = ["m7i.xlarge"]
      spot_instance_types = ["m7i.xlarge", "m6i.xlarge", "m7a.xlarge"]
      node_min            = 3
      node_max            = 6
      spot_max            = 6
      db_instance_class   = "db.m7g.large"
      db_storage_gb       = 100
      db_max_storage_gb   = 500
      cache_node_type     = "cache.m7g.large"
      cache_replicas      = 1
      single_nat_gateway  = true
    }
    professional = {
      node_instance_types = ["m7i.2xlarge"]
      spot_instance_types = ["m7i.2xlarge", "m6i.2xlarge", "m7a.2xlarge"]
      node_min            = 3
      node_max            = 12
      spot_max            = 12
      db_instance_class   = "db.m7g.xlarge"
      db_storage_gb       = 250
      db_max_storage_gb   = 1000
      cache_node_type     = "cache.m7g.large"
      cache_replicas      = 2
      single_nat_gateway  = false
    }
    enterprise = {
      node_instance_types = ["m7i.4xlarge"]
      spot_instance_types = ["m7i.4xlarge", "m6i.4xlarge", "m7a.4xlarge"]
      node_min            = 6
      node_max            = 30
      spot_max            = 30
      db_instance_class   = "db.m7g.2xlarge"
      db_storage_gb       = 500
      db_max_storage_gb   = 4000
      cache_node_type     = "cache.m7g.xlarge"
      cache_replicas      = 2
      single_nat_gateway  = false
    }
  }
  size = local.sizes[var.plan_size]

  cluster_name = "${var.name}-${var.environment}"
  account_id   = data.aws_caller_identity.current.account_id
  partition    = data.aws_partition.current.partition
  oidc_issuer  = replace(aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")
  namespace    = "aigronova"
}

# The three zones, pinned by name so that a zone AWS adds later does not move subnets.
data "aws_availability_zones" "available" {
  state = "available"
  filter {
    name   = "zone-name"
    values = ["${var.region}a", "${var.region}b", "${var.region}c"]
  }
}
