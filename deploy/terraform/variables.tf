variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "aigronova"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name: lower case letters, digits and dashes, at most 21 characters."
  }
}

variable "environment" {
  description = "Environment tag, e.g. production or staging."
  type        = string
  default     = "production"
}

variable "region" {
  description = "The AWS region of the platform."
  type        = string
  default     = "sa-east-1"
}

variable "replica_region" {
  description = "Region of the cross-region backup copies. sa-east-1 is Brazil's only region, so the copies leave the country: an international transfer under LGPD art. 33 (the dumps are encrypted before upload)."
  type        = string
  default     = "us-east-1"
}

variable "plan_size" {
  description = "Size of the installation: starter, professional or enterprise (nodes, database, cache, NAT)."
  type        = string
  default     = "starter"
  validation {
    condition     = contains(["starter", "professional", "enterprise"], var.plan_size)
    error_message = "plan_size must be starter, professional or enterprise."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC; split into public, private and database subnets in three zones."
  type        = string
  default     = "10.40.0.0/16"
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version (1.30 or later)."
  type        = string
  default     = "1.33"
}

variable "cluster_endpoint_public_cidrs" {
  description = "CIDRs allowed to reach the EKS API endpoint from the internet (operators, CI); empty: private endpoint only."
  type        = list(string)
  default     = []
}

variable "api_domain" {
  description = "Host name of the public API, e.g. api.aigronova.com.br; an ACM certificate is issued for it."
  type        = string
}

variable "extra_domains" {
  description = "Other host names the certificate covers, e.g. Argo CD's, which CI must reach."
  type        = list(string)
  default     = []
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone of api_domain, to validate the certificate by DNS; empty: add the validation record by hand."
  type        = string
  default     = ""
}

variable "github_repository" {
  description = "GitHub repository (owner/name) whose main branch may push images to ECR."
  type        = string
}

variable "services" {
  description = "The components that get an IRSA role: the gateway and each domain service the chart runs."
  type        = list(string)
  default     = ["gateway", "healthquantum", "finquantum", "ai-governance"]
}

variable "helm_release_name" {
  description = "Name of the chart's Helm release (releaseName in deploy/argocd/application.yaml). The IRSA roles of the backup job and the components trust the service accounts the chart names after it (aigronova-<component> for the release aigronova), in the namespace aigronova."
  type        = string
  default     = "aigronova"
  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,51}[a-z0-9])?$", var.helm_release_name))
    error_message = "helm_release_name: a Helm release name, lower case letters, digits and dashes, at most 53 characters."
  }
}

variable "database_require_tls" {
  description = "Set rds.force_ssl. The aigronova binary's PostgreSQL driver is built without TLS today, so this stays false until it is (traffic stays in private subnets)."
  type        = bool
  default     = false
}

variable "backup_retention_days" {
  description = "How long database dumps are kept in S3 (they move to cheaper classes on the way)."
  type        = number
  default     = 730
}

variable "alert_email" {
  description = "Address that receives infrastructure alarms (certificate expiry); empty: none."
  type        = string
  default     = ""
}
