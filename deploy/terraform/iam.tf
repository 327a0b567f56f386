# IAM roles for service accounts (IRSA): the cluster's add-ons, the backup job and one role per
# platform component, and the role GitHub Actions assumes to push images. Of the components, only
# healthquantum needs AWS permissions today (its objects in S3, below); the others' roles are the
# place to grant theirs.

locals {
  # The chart names its service accounts <fullname>-<component> (templates/serviceaccount.yaml), its
  # fullname being the release name when that contains "aigronova", else <release>-aigronova, cut to
  # 40 characters (deploy/helm/aigronova/templates/_helpers.tpl, "aigronova.fullname"). The roles
  # trust exactly those names, so var.helm_release_name must be the release's name (releaseName in
  # deploy/argocd/application.yaml), and the namespace the Application's destination.
  chart_fullname = trimsuffix(substr(
    strcontains(var.helm_release_name, "aigronova") ? var.helm_release_name : "${var.helm_release_name}-aigronova",
  0, 40), "-")

  irsa = merge(
    {
      aws-load-balancer-controller = { namespace = "kube-system", service_account = "aws-load-balancer-controller" }
      cluster-autoscaler           = { namespace = "kube-system", service_account = "cluster-autoscaler" }
      external-secrets             = { namespace = "external-secrets", service_account = "external-secrets" }
      backup                       = { namespace = local.namespace, service_account = "${local.chart_fullname}-backup" }
    },
    { for service in var.services : service => { namespace = local.namespace, service_account = "${local.chart_fullname}-${service}" } },
  )
}

data "aws_iam_policy_document" "irsa_trust" {
  for_each = local.irsa

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.eks.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${each.value.namespace}:${each.value.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "irsa" {
  for_each = local.irsa

  name               = "${local.cluster_name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.irsa_trust[each.key].json
}

# The AWS Load Balancer Controller manages the ALB of the gateway's Ingress. Its own published
# policy is the reference; this one covers what an internet-facing ALB with ACM, WAF and access
# logs needs.
resource "aws_iam_role_policy_attachment" "lb_controller" {
  role       = aws_iam_role.irsa["aws-load-balancer-controller"].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/ElasticLoadBalancingFullAccess"
}

data "aws_iam_policy_document" "lb_controller" {
  statement {
    sid = "Discover"
    actions = [
      "ec2:DescribeAccountAttributes", "ec2:DescribeAddresses", "ec2:DescribeAvailabilityZones",
      "ec2:DescribeInternetGateways", "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
      "ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces", "ec2:DescribeTags", "ec2:DescribeRouteTables",
      "acm:ListCertificates", "shield:GetSubscriptionState",
    ]
    resources = ["*"]
  }
  statement {
    sid       = "Certificates"
    actions   = ["acm:DescribeCertificate"]
    resources = ["arn:${local.partition}:acm:${var.region}:${local.account_id}:certificate/*"]
  }
  statement {
    sid       = "ReadWebAcls"
    actions   = ["wafv2:GetWebACL"]
    resources = ["arn:${local.partition}:wafv2:${var.region}:${local.account_id}:regional/webacl/*"]
  }
  statement {
    sid     = "WebAcls"
    actions = ["wafv2:GetWebACLForResource", "wafv2:AssociateWebACL", "wafv2:DisassociateWebACL"]
    resources = [
      "arn:${local.partition}:elasticloadbalancing:${var.region}:${local.account_id}:loadbalancer/app/*",
      "arn:${local.partition}:wafv2:${var.region}:${local.account_id}:regional/webacl/*",
    ]
  }
  statement {
    sid       = "SecurityGroupsInThisVpc"
    actions   = ["ec2:CreateSecurityGroup"]
    resources = ["arn:${local.partition}:ec2:${var.region}:${local.account_id}:vpc/${aws_vpc.this.id}"]
  }
  statement {
    sid = "OwnSecurityGroups"
    actions = [
      "ec2:CreateSecurityGroup", "ec2:CreateTags", "ec2:DeleteTags", "ec2:AuthorizeSecurityGroupIngress",
      "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup",
    ]
    resources = ["arn:${local.partition}:ec2:${var.region}:${local.account_id}:security-group/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceAccount"
      values   = [local.account_id]
    }
  }
  statement {
    sid       = "ServiceLinkedRole"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["arn:${local.partition}:iam::${local.account_id}:role/aws-service-role/elasticloadbalancing.amazonaws.com/*"]
    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["elasticloadbalancing.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "lb_controller" {
  name   = "load-balancer-controller"
  role   = aws_iam_role.irsa["aws-load-balancer-controller"].id
  policy = data.aws_iam_policy_document.lb_controller.json
}

# The Cluster Autoscaler resizes this cluster's node groups, and only those.
data "aws_iam_policy_document" "cluster_autoscaler" {
  statement {
    sid = "Discover"
    actions = [
      "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
      "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
      "autoscaling:DescribeTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
      "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements",
    ]
    resources = ["*"]
  }
  statement {
    sid       = "NodeGroups"
    actions   = ["eks:DescribeNodegroup"]
    resources = ["arn:${local.partition}:eks:${var.region}:${local.account_id}:nodegroup/${local.cluster_name}/*"]
  }
  statement {
    sid       = "ResizeOwnGroups"
    actions   = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
    resources = ["arn:${local.partition}:autoscaling:${var.region}:${local.account_id}:autoScalingGroup:*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/k8s.io/cluster-autoscaler/${local.cluster_name}"
      values   = ["owned"]
    }
  }
}

resource "aws_iam_role_policy" "cluster_autoscaler" {
  name   = "cluster-autoscaler"
  role   = aws_iam_role.irsa["cluster-autoscaler"].id
  policy = data.aws_iam_policy_document.cluster_autoscaler.json
}

# External Secrets reads the platform's one secret.
data "aws_iam_policy_document" "external_secrets" {
  statement {
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [aws_secretsmanager_secret.platform.arn]
  }
  statement {
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.data.arn]
  }
}

resource "aws_iam_role_policy" "external_secrets" {
  name   = "read-platform-secret"
  role   = aws_iam_role.irsa["external-secrets"].id
  policy = data.aws_iam_policy_document.external_secrets.json
}

# The backup job writes dumps under its prefix and reads them back for restores and drills. It
# cannot delete: versioning and Object Lock keep every dump for the retention period.
data "aws_iam_policy_document" "backup_job" {
  statement {
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.backups.arn]
  }
  statement {
    actions   = ["s3:PutObject", "s3:GetObject"]
    resources = ["${aws_s3_bucket.backups.arn}/postgres/*"]
  }
  statement {
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.data.arn]
  }
}

resource "aws_iam_role_policy" "backup_job" {
  name   = "write-database-dumps"
  role   = aws_iam_role.irsa["backup"].id
  policy = data.aws_iam_policy_document.backup_job.json
}

# healthquantum keeps its reports and medical images under healthquantum/ in the objects bucket
# (the object_store crate's S3 client, with this role's web identity): it reads, writes and deletes
# them by key, and lists them to sweep those no record wants. s3:ListBucket is needed for that, and
# because without it S3 answers 403, not 404, for a key that does not exist, where healthquantum
# relies on the 404 (a missing report is rendered again); it is granted on the whole bucket (key
# names carry tenant and record ids, never personal data). The bucket's default SSE-KMS encryption uses the data key, through S3 only.
data "aws_iam_policy_document" "healthquantum" {
  statement {
    sid       = "NotFoundIsNotFound"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.objects.arn]
  }
  statement {
    sid       = "OwnObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.objects.arn}/healthquantum/*"]
  }
  statement {
    sid       = "EncryptObjects"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.data.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "healthquantum" {
  name   = "healthquantum-objects"
  role   = aws_iam_role.irsa["healthquantum"].id
  policy = data.aws_iam_policy_document.healthquantum.json
}

# GitHub Actions, on the main branch of the repository only, pushes images to the two repositories.
resource "aws_iam_openid_connect_provider" "github" {
  url            = "https://token.actions.githubusercontent.com"
  client_id_list = ["sts.amazonaws.com"]
}

data "aws_iam_policy_document" "ci_trust" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.github.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:sub"
      values   = ["repo:${var.github_repository}:ref:refs/heads/main"]
    }
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ci" {
  name               = "${local.cluster_name}-ci"
  assume_role_policy = data.aws_iam_policy_document.ci_trust.json
}

data "aws_iam_policy_document" "ci" {
  statement {
    sid       = "Login"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid = "PushImages"
    actions = [
      "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:CompleteLayerUpload", "ecr:DescribeImages",
      "ecr:GetDownloadUrlForLayer", "ecr:InitiateLayerUpload", "ecr:PutImage", "ecr:UploadLayerPart",
    ]
    resources = [for repository in aws_ecr_repository.this : repository.arn]
  }
  statement {
    sid       = "EncryptLayers"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.data.arn]
  }
}

resource "aws_iam_role_policy" "ci" {
  name   = "push-images"
  role   = aws_iam_role.ci.id
  policy = data.aws_iam_policy_document.ci.json
}
